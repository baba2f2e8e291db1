// Well-known offensive tools, by strings their binaries and scripts carry.
rule credential_dumper_mimikatz
{
  meta:
    severity = "malicious"
    description = "Mimikatz credential dumping commands"
  strings:
    $cmd = /sekurlsa::(logonpasswords|wdigest|msv|ekeys)/ nocase ascii wide
    $lsa = /lsadump::(sam|secrets|dcsync)/ nocase ascii wide
  condition:
    $cmd or $lsa
}

rule cryptominer_stratum
{
  meta:
    severity = "suspicious"
    description = "a cryptocurrency miner configured for a stratum mining pool"
  strings:
    $pool = /stratum\+(tcp|ssl):\/\/[a-z0-9.-]+:[0-9]{2,5}/ nocase ascii wide
    $xmrig = /(xmrig|donate-level|randomx)/ nocase ascii wide
  condition:
    $pool and $xmrig
}
