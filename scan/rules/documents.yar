// Office documents that run commands without macros.
rule office_dde_field
{
  meta:
    severity = "suspicious"
    description = "an Office document field that runs a program through DDE"
  strings:
    $dde = /(instrText[^>]{0,64}>|w:instr=")[ \t]*"?[ \t]*DDE(AUTO)?[ \t]/ nocase
  condition:
    $dde
}
