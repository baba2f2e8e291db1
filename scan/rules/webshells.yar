// Server-side scripts that run code they decode at run time: the usual shape of a PHP web shell.
rule php_webshell_eval
{
  meta:
    severity = "suspicious"
    description = "PHP code that evaluates decoded or decompressed text (web shell pattern)"
  strings:
    $open = { 3C 3F 70 68 70 }
    $eval = /(eval|assert)\s*\(\s*(base64_decode|gzinflate|gzuncompress|str_rot13)\s*\(/ nocase
  condition:
    $open and $eval
}
