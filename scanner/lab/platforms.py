"""The Windows generations Exchange 2007 runs on, as the lab models them: one place for
every per-platform value. Each value names its source; docs/lab.md ("Platforms") lists
the sources in full and says which values are unconfirmed.

Exchange 2007 runs on Windows Server 2003 (R2) x64 and 2008 x64, and from SP3 on
2008 R2 (docs/lab.md, source [E2007-OS]). Remote management there is WinRM 1.1
(2003 R2 with KB936059; 2008) or WinRM 2.0 (2008 R2) (docs/lab.md, [TN-ee922649]).
"""

from __future__ import annotations

from dataclasses import dataclass

PLATFORMS = ("2003r2", "2008", "2008r2")
POWERSHELLS = ("1.0", "2.0")
DEFAULT_PLATFORM = "2008r2"


@dataclass(frozen=True)
class Platform:
    """What one Windows generation's remote management looks like from the wire."""

    key: str                     # 2003r2 | 2008 | 2008r2 (the fleet file's `platform`)
    windows: str                 # product name, for documentation and preflight output
    winrm: str                   # WS-Management stack: "1.1" | "2.0"
    os_version: str              # as Identify's ProductVersion shows it: "5.2.3790 SP: 2.0"
    http_port: int               # default listener ports
    https_port: int
    max_envelope_kb: int         # MaxEnvelopeSizekb default
    idle_timeout_s: int          # Winrs IdleTimeout default: an undeleted shell lingers this long
    max_shells_per_user: int     # Winrs MaxShellsPerUser default: Create beyond it -> QuotaLimit
    system_root: str             # %SystemRoot% of a default installation
    shell_id_prefix: str         # CreateResponse ShellId prefix ("uuid:" on WinRM 1.1)
    anonymous_address: bool      # CreateResponse a:Address is the anonymous role (WinRM 1.1)
    cmd_breaks_on_utf8: bool     # cmd.exe under code page 65001 prints nothing and exits 0
    powershells: tuple[str, ...]  # PowerShell versions this Windows can run
    default_powershell: str

    @property
    def product_version(self) -> str:
        """Identify's ProductVersion text, e.g. "OS: 5.2.3790 SP: 2.0 Stack: 1.1"."""
        return f"OS: {self.os_version} Stack: {self.winrm}"

    def default_port(self, scheme: str) -> int:
        """The port WinRM listens on by default for `scheme` (http | https)."""
        return self.https_port if scheme == "https" else self.http_port


# Sources (docs/lab.md, "Platforms", names the documents behind each bracket):
#   ports 80/443 on WinRM 1.1, 5985/5986 on 2.0 ........................ [WINRM-PORTS]
#   OS versions: 5.2.3790 SP2 (issue text "OS: 5.2.3790 SP: 2.0 Stack: 1.1"), 6.0.6002 SP2,
#     6.1.7601 SP1: the Windows build numbers of those service packs .... [OS-BUILDS]
#   MaxEnvelopeSizekb 150 on older stacks, 500 later ..................... [MS-WSMV-2.2.4.10]
#   IdleTimeout 180 s on WinRM 1.1, 7200 s later ......................... [FACTS-QUOTAS]
#   MaxShellsPerUser 5 (the QuotaLimit fault text "maximum number of 5 concurrent shells")
#     ..................................................................... [QUOTA-FAULT]
#   CreateResponse framing: WinRb/WinRM open_shell_v1.xml / open_shell_v2.xml [WINRB-STUBS]
#   cmd.exe under code page 65001 before 2008 R2 ........................ [CP65001]
#   PowerShell 2.0 is part of Windows Server 2008 R2; 2003 and 2008 run 1.0 or, with the
#     Windows Management Framework, 2.0 ................................... [PS-VERSIONS]
#   %SystemRoot%: C:\WINDOWS on 2003, C:\Windows on 2008 (older installs: C:\WINNT) [SYSROOT]
PLATFORM_TABLE: dict[str, Platform] = {
    "2003r2": Platform(
        key="2003r2", windows="Windows Server 2003 R2 x64", winrm="1.1", os_version="5.2.3790 SP: 2.0",
        http_port=80, https_port=443, max_envelope_kb=150, idle_timeout_s=180, max_shells_per_user=5,
        system_root="C:\\WINDOWS", shell_id_prefix="uuid:", anonymous_address=True, cmd_breaks_on_utf8=True,
        powershells=("1.0", "2.0"), default_powershell="1.0",
    ),
    "2008": Platform(
        key="2008", windows="Windows Server 2008 x64", winrm="1.1", os_version="6.0.6002 SP: 2.0",
        http_port=80, https_port=443, max_envelope_kb=150, idle_timeout_s=180, max_shells_per_user=5,
        system_root="C:\\Windows", shell_id_prefix="uuid:", anonymous_address=True, cmd_breaks_on_utf8=True,
        powershells=("1.0", "2.0"), default_powershell="1.0",
    ),
    "2008r2": Platform(
        key="2008r2", windows="Windows Server 2008 R2 x64", winrm="2.0", os_version="6.1.7601 SP: 1.0",
        http_port=5985, https_port=5986, max_envelope_kb=500, idle_timeout_s=7200, max_shells_per_user=5,
        system_root="C:\\Windows", shell_id_prefix="", anonymous_address=False, cmd_breaks_on_utf8=False,
        powershells=("2.0",), default_powershell="2.0",
    ),
}


def platform(key: str) -> Platform:
    """The description of platform `key` (2003r2 | 2008 | 2008r2); KeyError otherwise."""
    return PLATFORM_TABLE[key]
