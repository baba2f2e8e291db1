// Command lines that fetch or hide what they run.
rule powershell_encoded_command
{
  meta:
    severity = "suspicious"
    description = "a PowerShell command line running a base64-encoded command"
  strings:
    $ps = /powershell(\.exe)?[ \t]+(-[a-z]+[ \t]+)*-e(nc|ncodedcommand)?[ \t]+[A-Za-z0-9+\/=]{40,}/ nocase ascii wide
  condition:
    $ps
}

rule reverse_shell_dev_tcp
{
  meta:
    severity = "suspicious"
    description = "an interactive shell wired to a TCP connection (reverse shell)"
  strings:
    $bash = /(ba)?sh[ \t]+-i[ \t]+>&[ \t]*\/dev\/tcp\/[0-9a-z.-]+\/[0-9]{1,5}/ nocase
  condition:
    $bash
}
