# cas-audit collector: runs on one Exchange 2007 Client Access Server under Windows
# PowerShell 1.0 and prints the document described by schema.xsd, then the line
# "##CASAUDIT-END##". It only reads; interpretation happens on the scanner's side.
#
# It arrives in the shell environment variable CASAUDIT_PS and is started by the
# bootstrap "& $ExecutionContext.InvokeCommand.NewScriptBlock($env:CASAUDIT_PS)".
# Inputs: CASAUDIT_SINCE (yyyy-MM-ddTHH:mm:ssZ, UTC; events newer than this) and
# CASAUDIT_MAX_EVENTS (default 200).
#
# PowerShell 1.0 only (see pslint.py): no try/catch, no -split/-join, no Add-Type.
# Every failure is terminating ($ErrorActionPreference = 'Stop') and lands in the one
# trap below, which records <error stage="$stage" .../> and resumes with the next
# statement. Each stage therefore sets defaults, computes, and only then emits its
# element, so a failure never leaves an element half-written.
#
# Emitting convention (tests/test_collector_script.py reads it back from the syntax
# tree): element names appear only as string literals starting with '<' or '</', and
# every attribute is written by `T 'name' value`, the name a string literal.
# Comment lines and blank lines are stripped before sending (collector_script()).

$ProgressPreference = 'SilentlyContinue'
$ErrorActionPreference = 'Stop'
$sb = New-Object System.Text.StringBuilder
$eb = New-Object System.Text.StringBuilder
$inv = [System.Globalization.CultureInfo]::InvariantCulture
$last = @{ m = '' }
$stage = 'start'

# X: text escaped for XML; characters XML 1.0 cannot carry become '?'.
function X($s) { [System.Security.SecurityElement]::Escape(([string]$s -replace '[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]', '?')) }
# T: one attribute, name="escaped value" with a leading space.
function T($n, $v) { ' ' + $n + '="' + (X $v) + '"' }
# A: append raw markup to the document.
function A($s) { [void]$sb.Append($s) }
# U: a DateTime as yyyy-MM-ddTHH:mm:ssZ in UTC; '' for none.
function U($d) { if ($d -eq $null) { '' } else { $d.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $inv) } }
# Err: record a trapped error for the current stage.
function Err($e) { $last.m = [string]$e.Exception.Message; [void]$eb.Append('<error' + (T 'stage' $stage) + (T 'message' $last.m) + '/>') }
# R: the file an appSettings file=/configSource= value $v names, as one <ref> element.
# Only a plain name of a file in the config file's own folder $d is read: anything rooted,
# with '/', ':', wildcards, control characters, a trailing dot or space, a device name,
# leaving the folder or a reparse point is 'refused-path'. Own trap: a failure is this
# reference's error, not the stage's. $budget caps the bytes of all referenced files.
function R($d, $a, $v) {
    $p = ''; $x = 'false'; $l = ''; $m = ''; $b = ''; $r = ''; $last.m = ''
    trap { $last.m = [string]$_.Exception.Message; continue }
    if ($v -eq '' -or $v -ne $v.Trim() -or $v -match '[/:*?"<>|\x00-\x1f]|[. ]$|(^|\\)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.[^\\]*)?$' -or [System.IO.Path]::IsPathRooted($v)) { $r = 'refused-path' }
    if ($r -eq '') { $p = [System.IO.Path]::GetFullPath([System.IO.Path]::Combine($d, $v)) }
    if ($r -eq '' -and ($last.m -ne '' -or [System.IO.Path]::GetDirectoryName($p) -ne $d)) { $r = 'refused-path'; $p = ''; $last.m = '' }
    if ($r -eq '' -and [System.IO.File]::Exists($p)) {
        $x = 'true'
        $fi = New-Object System.IO.FileInfo $p
        $l = [string]$fi.Length
        $m = U $fi.LastWriteTimeUtc
        if (([int]$fi.Attributes -band 1024) -ne 0) { $r = 'refused-path' }
        elseif ($fi.Length -gt 1048576 -or $fi.Length -gt $budget.n) { $r = 'too-large' }
        else { $b = [System.Convert]::ToBase64String([System.IO.File]::ReadAllBytes($p)); if ($last.m -eq '') { $budget.n = $budget.n - $fi.Length } }
    }
    if ($last.m -ne '' -and $r -eq '') { $r = $last.m; $b = '' }
    '<ref' + (T 'attribute' $a) + (T 'value' $v) + (T 'path' $p) + (T 'exists' $x) + (T 'length' $l) + (T 'modified' $m) + (T 'error' $r) + '>' + $b + '</ref>'
}

trap { Err $_; continue }

A ('<casaudit' + (T 'version' '1') + (T 'psversion' $Host.Version) + (T 'collected' (U ([DateTime]::UtcNow))) + '>')

$stage = 'host'
$cn = [string]$env:COMPUTERNAME

# The AD site as the local Netlogon service keeps it: SiteName (set by an administrator)
# wins over DynamicSiteName (what Netlogon found). A local registry read: asking a domain
# controller (GetComputerSite) fails in a WinRS session without delegated credentials.
# $sf names the value that gave the site; a value is cut at its first NUL, as C reads it.
# Neither value (and no read error): a stage error says the site is unknown.
$stage = 'site'
$site = ''; $sf = ''; $nr = $null; $last.m = ''
$nk = 'HKLM:\SYSTEM\CurrentControlSet\Services\Netlogon\Parameters'
if (Test-Path $nk) { $nr = Get-ItemProperty $nk }
foreach ($v in @('SiteName', 'DynamicSiteName')) {
    $sv = ''
    if ($nr -ne $null -and $sf -eq '') { $sv = ([string]$nr.$v).Split([char]0)[0].Trim() }
    if ($sv -ne '') { $site = $sv; $sf = $v }
}
if ($sf -eq '' -and $last.m -eq '') { throw ('Netlogon has no SiteName or DynamicSiteName value under ' + $nk + ': the site is unknown.') }
A ('<host' + (T 'computer' $cn) + (T 'site' $site) + (T 'sitesource' $sf) + '/>')

# Setup key: prefer the one holding MsiInstallPath, Setup before v8.0\Setup.
$stage = 'setup'
$key = ''; $ip = ''; $pma = ''; $pmi = ''; $bma = ''; $bmi = ''
foreach ($k in @('Setup', 'v8.0\Setup')) {
    $p = 'HKLM:\SOFTWARE\Microsoft\Exchange\' + $k
    $r = $null
    if (($key -eq '' -or $ip -eq '') -and (Test-Path $p)) { $r = Get-ItemProperty $p }
    if ($r -ne $null -and ($key -eq '' -or [string]$r.MsiInstallPath -ne '')) {
        $key = $k
        $ip = [string]$r.MsiInstallPath
        $pma = [string]$r.MsiProductMajor
        $pmi = [string]$r.MsiProductMinor
        $bma = [string]$r.MsiBuildMajor
        $bmi = [string]$r.MsiBuildMinor
    }
}
A ('<setup' + (T 'key' $key) + (T 'installpath' $ip) + (T 'productmajor' $pma) + (T 'productminor' $pmi) + (T 'buildmajor' $bma) + (T 'buildminor' $bmi) + '/>')

$stage = 'exsetup'
$xp = ''; $xe = 'false'; $xv = ''
if ($ip -ne '') { $xp = [System.IO.Path]::Combine($ip, 'bin\ExSetup.exe') }
if ($xp -ne '' -and [System.IO.File]::Exists($xp)) {
    $xe = 'true'
    $xv = [string][System.Diagnostics.FileVersionInfo]::GetVersionInfo($xp).FileVersion
}
A ('<exsetup' + (T 'path' $xp) + (T 'exists' $xe) + (T 'version' $xv) + '/>')

$stage = 'rollups'
$pk = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\UserData\S-1-5-18\Products\461C2B4266EDEF444B864AD6D9E5B613\Patches'
if (Test-Path $pk) {
    foreach ($i in @(Get-ChildItem $pk)) {
        $r = $null
        $r = Get-ItemProperty $i.PSPath
        if ($r -ne $null) { A ('<rollup' + (T 'name' $r.DisplayName) + (T 'installed' $r.Installed) + '/>') }
    }
}

# Config files as raw bytes (base64); files over 1 MiB are not read.
$stage = 'config'
$fns = @{ pop3 = 'Pop3'; imap4 = 'Imap4' }
foreach ($c in @('pop3', 'imap4')) {
    $f = ''; $fe = 'false'; $fl = ''; $fm = ''; $fb = ''; $fr = ''
    if ($ip -ne '') { $f = [System.IO.Path]::Combine($ip, 'ClientAccess\PopImap\Microsoft.Exchange.' + $fns[$c] + '.exe.Config') }
    if ($f -ne '' -and [System.IO.File]::Exists($f)) {
        $fe = 'true'
        $last.m = ''
        $fi = New-Object System.IO.FileInfo $f
        $fl = [string]$fi.Length
        $fm = U $fi.LastWriteTimeUtc
        if ($fi.Length -gt 1048576) { $fr = 'too-large' } else { $fb = [System.Convert]::ToBase64String([System.IO.File]::ReadAllBytes($f)) }
        if ($last.m -ne '') { $fr = $last.m; $fb = '' }
    }
    A ('<config' + (T 'protocol' $c) + (T 'path' $f) + (T 'exists' $fe) + (T 'length' $fl) + (T 'modified' $fm) + (T 'error' $fr) + '>' + $fb + '</config>')
}

# Files named by appSettings file=/configSource= (.NET reads them after or instead of
# the section): candidates from every <appSettings> element of the config file, found by
# an XmlReader that refuses DTDs and resolves nothing; the scanner decides which counts.
# A failure to read the config file as XML is this element's error, not the stage's.
$stage = 'configrefs'
$budget = @{ n = 2097152 }
foreach ($c in @('pop3', 'imap4')) {
    $f = ''; $d = ''; $re = ''; $rs = ''; $doc = $null; $fs = $null
    if ($ip -ne '') { $f = [System.IO.Path]::Combine($ip, 'ClientAccess\PopImap\Microsoft.Exchange.' + $fns[$c] + '.exe.Config') }
    if ($f -ne '' -and [System.IO.File]::Exists($f) -and (New-Object System.IO.FileInfo $f).Length -le 1048576) {
        $n = $eb.Length; $last.m = ''
        $d = [System.IO.Path]::GetDirectoryName([System.IO.Path]::GetFullPath($f))
        $xs = New-Object System.Xml.XmlReaderSettings
        $xs.ProhibitDtd = $true
        $xs.XmlResolver = $null
        $fs = [System.IO.File]::OpenRead($f)
        if ($last.m -eq '') { $doc = New-Object System.Xml.XmlDocument; $doc.Load([System.Xml.XmlReader]::Create($fs, $xs)) }
        if ($fs -ne $null) { $fs.Close() }
        if ($last.m -ne '') { $re = $last.m; $doc = $null; [void]$eb.Remove($n, $eb.Length - $n) }
    }
    if ($doc -ne $null) {
        $seen = New-Object System.Collections.Hashtable
        foreach ($e in @($doc.GetElementsByTagName('appSettings'))) {
            foreach ($a in @('file', 'configSource')) {
                $v = $e.GetAttribute($a)
                if ($e.HasAttribute($a) -and $seen.Count -lt 4 -and -not $seen.ContainsKey($a + '|' + $v)) { $seen[$a + '|' + $v] = 1; $rs = $rs + (R $d $a $v) }
            }
        }
    }
    A ('<configrefs' + (T 'protocol' $c) + (T 'error' $re) + '>' + $rs + '</configrefs>')
}

$stage = 'service'
$sns = @{ pop3 = 'MSExchangePOP3'; imap4 = 'MSExchangeIMAP4' }
foreach ($c in @('pop3', 'imap4')) {
    $n = $sns[$c]; $se = 'false'; $ss = ''; $sm = ''; $sp = ''; $sa = ''
    $g = $null; $w = $null; $pr = $null
    $g = Get-Service | Where-Object { $_.Name -eq $n }
    if ($g -ne $null) { $se = 'true'; $ss = [string]$g.Status }
    $w = Get-WmiObject Win32_Service -Filter ("Name='" + $n + "'")
    if ($w -ne $null) {
        $se = 'true'
        $sm = [string]$w.StartMode
        if ($w.ProcessId -gt 0) { $sp = [string]$w.ProcessId; $pr = Get-Process -Id $w.ProcessId; $sa = U $pr.StartTime }
    }
    A ('<service' + (T 'protocol' $c) + (T 'name' $n) + (T 'exists' $se) + (T 'status' $ss) + (T 'startmode' $sm) + (T 'processid' $sp) + (T 'started' $sa) + '/>')
}

# Event 1008 (filtered on EventID, not InstanceId) within the newest $win entries of
# the Application log (Get-EventLog -Newest walks back from the newest entry and stops).
# If that window is full and its oldest entry is still newer than the cut-off (or there
# is no cut-off), older matches may exist: full="true" and truncated="true" say so; more
# matches than $max also set truncated. error= says why the log could not be read at
# all (then nothing about refused logons is known).
$stage = 'events'
$win = 10000
$max = 200; $since = $null; $sc = ''; $tr = 'false'; $fu = 'false'; $lr = ''; $all = @(); $h = @()
if ([string]$env:CASAUDIT_MAX_EVENTS -ne '') { $max = [int]$env:CASAUDIT_MAX_EVENTS }
if ([string]$env:CASAUDIT_SINCE -ne '') {
    $since = [DateTime]::ParseExact($env:CASAUDIT_SINCE, "yyyy-MM-dd'T'HH:mm:ss'Z'", $inv, [System.Globalization.DateTimeStyles]'AssumeUniversal, AdjustToUniversal')
    $sc = U $since
}
# A failure reading the log or selecting from it (the whole statement stops) leaves no
# reliable list: error= says so, instead of an empty list that would read as "none".
$last.m = ''
$all = @(Get-EventLog -LogName Application -Newest $win)
$h = @($all | Where-Object { $_.EventID -eq 1008 -and ($_.Source -eq 'MSExchangePOP3' -or $_.Source -eq 'MSExchangeIMAP4') -and ($since -eq $null -or $_.TimeGenerated.ToUniversalTime() -gt $since) })
if ($last.m -ne '') { $lr = $last.m; $all = @(); $h = @() }
if ($h.Count -gt $max) { $tr = 'true' }
if ($all.Count -ge $win -and ($since -eq $null -or $all[$all.Count - 1].TimeGenerated.ToUniversalTime() -gt $since)) { $tr = 'true'; $fu = 'true' }
A ('<events' + (T 'since' $sc) + (T 'max' $max) + (T 'truncated' $tr) + (T 'window' $win) + (T 'full' $fu) + (T 'error' $lr) + '>')
for ($i = 0; $i -lt $h.Count -and $i -lt $max; $i++) {
    $e = $h[$i]
    $es = ''; $ei = ''; $ea = ''; $em = ''; $rs = $null
    $es = [string]$e.Source
    $ei = [string]$e.EventID
    $ea = U $e.TimeGenerated
    $rs = $e.ReplacementStrings
    $em = [string]$e.Message
    $ins = ''
    if ($null -ne $rs) { foreach ($s in $rs) { $ins = $ins + '<insertion>' + (X $s) + '</insertion>' } }
    A ('<event' + (T 'source' $es) + (T 'id' $ei) + (T 'at' $ea) + '>' + $ins + '<message>' + (X $em) + '</message>' + '</event>')
}
A '</events>'

$stage = 'output'
A $eb.ToString()
A ('<end/>' + '</casaudit>' + "`n" + '##CASAUDIT-END##' + "`n")
# Raw UTF-8 bytes without a byte-order mark, whatever the console code page.
$bytes = (New-Object System.Text.UTF8Encoding $false).GetBytes($sb.ToString())
$out = [System.Console]::OpenStandardOutput()
$out.Write($bytes, 0, $bytes.Length)
$out.Flush()
