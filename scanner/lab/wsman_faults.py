"""Faults of the lab's WS-Management service: the Windows error codes it answers with,
the WSManFault exception the operations raise, and the faults whose text Windows
recorded (sources beside each; docs/lab.md).
"""

from __future__ import annotations

WSMAN_FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
FAULT_DETAIL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"
ADDRESSING_FAULT_ACTION = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"

# Windows error codes used in f:WSManFault/@Code.
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_BAD_ARGUMENTS = 160
ERROR_FILENAME_EXCED_RANGE = 206
ERROR_INTERNAL_ERROR = 1359
ERROR_WSMAN_DESTINATION_UNREACHABLE = 2150858770
ERROR_WSMAN_ACTION_NOT_SUPPORTED = 2150858771
ERROR_WSMAN_MESSAGE_INFORMATION_HEADER_REQUIRED = 2150858769
ERROR_WSMAN_OPERATION_TIMEDOUT = 2150858793
ERROR_WSMAN_OPTIONS_INVALID_VALUE = 2150858835
ERROR_WSMAN_SCHEMA_VALIDATION_ERROR = 2150858817
ERROR_WSMAN_INVALID_XML = 2150858819
ERROR_WSMAN_SERVER_ENVELOPE_LIMIT = 2150858825
ERROR_WSMAN_SHELL_NOT_FOUND = 2150858843   # reported with subcode w:InvalidSelectors
ERROR_WSMAN_QUOTA_MAX_SHELLS = 2150859173  # w:QuotaLimit on Create (docs/lab.md, [QUOTA-FAULT])
ERROR_FILE_NOT_FOUND_HRESULT = 2147942402  # 0x80070002 from the "Shell cmd plugin"
#: The provider a WinRS command fault names (pypsrp tests/responses/test_winrs_no_cmd_shell.yml).
SHELL_CMD_PLUGIN = ("Shell cmd plugin", "%systemroot%\\system32\\winrscmd.dll")

MSG_TIMEOUT = ("The WS-Management service cannot complete the operation within the time "
               "specified in OperationTimeout.  ")
MSG_INVALID_SELECTORS = ("The WS-Management service cannot process the request because the "
                         "request contained invalid selectors for the resource. ")


class WSManFault(Exception):
    """A SOAP fault as WinRM sends it: s:Code/s:Subcode, s:Reason, f:WSManFault Code/Message."""

    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int,
                 message: str | None = None, *, action: str = WSMAN_FAULT_ACTION,
                 http_status: int = 500, provider: tuple[str, str] | None = None,
                 detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code                # "s:Sender" | "s:Receiver"
        self.subcode = subcode          # e.g. "w:InvalidSelectors"
        self.reason = reason
        self.wsman_code = wsman_code
        self.message = reason if message is None else message
        self.action = action
        self.http_status = http_status
        self.provider = provider        # (provider, path): the message is an f:ProviderFault
        self.detail = detail            # w:FaultDetail URI (before f:WSManFault), if Windows sends one


def file_not_found_fault() -> WSManFault:
    """What WinRS answers a Command whose program CreateProcess cannot find (no PATH search
    under WINRS_SKIP_CMD_SHELL): recorded in pypsrp tests/responses/test_winrs_no_cmd_shell.yml."""
    text = "The system cannot find the file specified. "
    return WSManFault("s:Receiver", "w:InternalError", text, ERROR_FILE_NOT_FOUND_HRESULT,
                      provider=SHELL_CMD_PLUGIN)


def schema_fault(detail: str) -> WSManFault:
    """A request that does not match WS-Management's schema; `detail` names what is wrong."""
    return WSManFault("s:Sender", "w:SchemaValidationError",
                      "The SOAP XML in the message does not match the corresponding XML schema "
                      "definition. Change the XML and retry. ", ERROR_WSMAN_SCHEMA_VALIDATION_ERROR,
                      detail)


def quota_fault(limit: int) -> WSManFault:
    """MaxShellsPerUser exceeded (docs/lab.md, [QUOTA-FAULT])."""
    return WSManFault(
        "s:Sender", "w:QuotaLimit",
        "The WS-Management service cannot process the request. The maximum number of concurrent "
        "shells for this user has been exceeded. Close existing shells or raise the quota for this user. ",
        ERROR_WSMAN_QUOTA_MAX_SHELLS,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number "
        f"of {limit} concurrent shells, which has been exceeded. Close existing shells or raise the "
        "quota for this user. ")


def shell_not_found(shell_id: str) -> WSManFault:
    """A ShellId the service does not have (deleted, expired or never created)."""
    return WSManFault(
        "s:Sender", "w:InvalidSelectors", MSG_INVALID_SELECTORS, ERROR_WSMAN_SHELL_NOT_FOUND,
        f"The request for the Windows Remote Shell with ShellId {shell_id[:40]} failed because the "
        "shell was not found on the server. Possible causes are: the specified ShellId is "
        "incorrect or the shell no longer exists on the server. Provide the correct ShellId "
        "or create a new shell and retry the operation. ")


def unknown_command(command_id: str) -> WSManFault:
    """A CommandId the shell does not have: tests/replay/winrs_bad_cmd_id.toml (the id
    is not in Windows' text)."""
    del command_id
    return WSManFault(
        "s:Sender", "w:InvalidSelectors", MSG_INVALID_SELECTORS, ERROR_WSMAN_SHELL_NOT_FOUND,
        "The Windows Remote Shell received a request to perform an operation on a command "
        "identifier that does not exist. Either the command has completed execution or the "
        "client specified an invalid command identifier. ",
        detail=FAULT_DETAIL + "UnexpectedSelectors")


def plugin_invalid_parameter() -> WSManFault:
    """A Receive naming no CommandId, answered by the shell plugin:
    tests/replay/winrs_fail_poll_process.toml (recorded for a shell without commands)."""
    text = "The parameter is incorrect. "
    return WSManFault("s:Sender", "w:InvalidParameter", text, ERROR_INVALID_PARAMETER,
                      provider=SHELL_CMD_PLUGIN, detail=FAULT_DETAIL + "InvalidValue")

