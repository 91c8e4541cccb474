# cas-audit discovery: runs on one Exchange 2007 management host under Windows
# PowerShell 1.0, lists every Client Access Server of the organisation and prints the
# document described by discover.xsd, then the line "##CASAUDIT-END##".
# Same conventions as collect.ps1: one trap records <error stage message/> and
# resumes; element names only in '<...' literals; attributes only through T.

$ProgressPreference = 'SilentlyContinue'
$ErrorActionPreference = 'Stop'
$sb = New-Object System.Text.StringBuilder
$eb = New-Object System.Text.StringBuilder
$stage = 'start'

function X($s) { [System.Security.SecurityElement]::Escape(([string]$s -replace '[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]', '?')) }
function T($n, $v) { ' ' + $n + '="' + (X $v) + '"' }
function A($s) { [void]$sb.Append($s) }
function Err($e) { [void]$eb.Append('<error' + (T 'stage' $stage) + (T 'message' $e.Exception.Message) + '/>') }

trap { Err $_; continue }

A '<casdiscovery>'

$stage = 'snapin'
$sn = 'Microsoft.Exchange.Management.PowerShell.Admin'
$loaded = @(Get-PSSnapin | Where-Object { $_.Name -eq $sn })
if ($loaded.Count -eq 0) { Add-PSSnapin $sn }

# Without this a multi-domain forest shows only the local domain's servers.
$stage = 'forest'
$AdminSessionADSettings.ViewEntireForest = $true

$stage = 'servers'
$cas = @(Get-ExchangeServer | Where-Object { $_.IsClientAccessServer })
foreach ($s in $cas) {
    $n = ''; $f = ''; $si = ''; $r = ''; $v = ''
    $n = [string]$s.Name
    $f = [string]$s.Fqdn
    $si = [string]$s.Site.Name
    $r = [string]$s.ServerRole
    $v = [string]$s.AdminDisplayVersion
    A ('<server' + (T 'name' $n) + (T 'fqdn' $f) + (T 'site' $si) + (T 'role' $r) + (T 'version' $v) + '/>')
}

$stage = 'output'
A $eb.ToString()
A ('<end/>' + '</casdiscovery>' + "`n" + '##CASAUDIT-END##' + "`n")
$bytes = (New-Object System.Text.UTF8Encoding $false).GetBytes($sb.ToString())
$out = [System.Console]::OpenStandardOutput()
$out.Write($bytes, 0, $bytes.Length)
$out.Flush()
