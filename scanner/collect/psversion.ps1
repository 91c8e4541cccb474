# cas-audit preflight: prints the version of the PowerShell that runs it ($Host.Version:
# "1.0.0.0" under Windows PowerShell 1.0, "2.0" under 2.0), then the line "##CASAUDIT-END##".
# Started like the collector (the bootstrap runs $env:CASAUDIT_PS), so it tests the same launch.
# PowerShell 1.0 only; reads nothing on the server.
[string]$Host.Version
'##CASAUDIT-END##'
