@echo off
rem Run by the Windows Task Scheduler (README.md, "Scheduling"): the nightly scan, then
rem the workbook of the run. The task's "Last Run Result" is the scan's exit code.
rem The password comes from the Windows Credential Manager of the task's account
rem (keyring set cas-audit CONTOSO\svc-casaudit, run once as that account).
setlocal
set CAS_AUDIT_LOG_FORMAT=json
if not exist C:\cas-audit\logs mkdir C:\cas-audit\logs
C:\cas-audit\venv\Scripts\cas-audit.exe --quiet scan --inventory C:\cas-audit\cas.toml --policy C:\cas-audit\policy.toml >> C:\cas-audit\logs\scan.log 2>&1
set SCAN_EXIT=%ERRORLEVEL%
C:\cas-audit\venv\Scripts\cas-audit.exe --quiet report --format xlsx --force --out C:\cas-audit\reports\cas-audit-latest.xlsx >> C:\cas-audit\logs\scan.log 2>&1
exit /b %SCAN_EXIT%
