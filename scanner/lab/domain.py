"""The domain around a simulated CAS (docs/lab.md, "The domain"): the AD site its Netlogon
keeps in the local registry, and the second hop. A process started through WinRS with NTLM,
Basic or undelegated Kerberos has no network credentials, so whatever asks a domain
controller fails with the operations error; a local registry read does not.
"""

from __future__ import annotations

from scanner.lab.fleet_model import SimServer

#: What a .NET call that binds to a domain controller throws in a session without network
#: credentials (the LDAP bind is anonymous): System.DirectoryServices' COMException
#: 0x80072020, "An operations error occurred." (Crypt32/PSPKI#171, zjorz/Public-AD-Scripts#35),
#: as PowerShell reports a failed method call.
OPERATIONS_ERROR = "An operations error occurred.\r\n"


def method_error(method: str, arguments: int, message: str) -> str:
    """A MethodInvocationException's message as PowerShell 1.0 words it."""
    return f'Exception calling "{method}" with "{arguments}" argument(s): "{message}"'


def asks_domain_controller(script: str, call: str) -> bool:
    """Whether `script` (its code, comments removed) makes the domain-controller lookup `call`."""
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
    return call.casefold() in code.casefold()


def netlogon_site(server: SimServer) -> tuple[str, str, str | None]:
    """(site, the Netlogon value that gave it, stage error) as collect.ps1 reads them from
    HKLM\\SYSTEM\\CurrentControlSet\\Services\\Netlogon\\Parameters: SiteName wins over
    DynamicSiteName; neither value gives no site and an error."""
    if server.site_value == "none" or not server.site:
        return "", "", ("Netlogon has no SiteName or DynamicSiteName value under "
                        "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\Netlogon\\Parameters: the site is unknown.")
    return server.site, server.site_value, None


def site_stage(server: SimServer, script: str, delegated: bool) -> tuple[str, str | None, list[str]]:
    """(site, sitesource, 'site' stage errors) of `script` on `server`. A script that asks a
    domain controller for the site (GetComputerSite) gets the operations error unless the
    session's credentials were delegated, and prints no sitesource (None); one that reads
    Netlogon locally gets what the registry holds."""
    if asks_domain_controller(script, "GetComputerSite"):
        if delegated:
            return server.site, None, []
        return "", None, [method_error("GetComputerSite", 0, OPERATIONS_ERROR)]
    site, source, error = netlogon_site(server)
    return site, source, [error] if error else []
