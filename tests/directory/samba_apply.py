"""Writes LDIF into a Samba AD DC's database offline and creates the test user.

Run by Samba's own Python (tests/samba_dc.py: SAMBA_PYTHON), which has its bindings:
    samba_apply.py SMB_CONF USER < input
where the first line of input is USER's password and the rest is LDIF. Schema changes need
"dsdb:schema update allowed" (set here, for this process only).
"""

import sys

import ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB


def main() -> None:
    lp = LoadParm()
    lp.load(sys.argv[1])
    lp.set("dsdb:schema update allowed", "true")
    db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
    password = sys.stdin.readline().rstrip("\n")
    for changetype, message in db.parse_ldif(sys.stdin.read()):
        if changetype == ldb.CHANGETYPE_MODIFY:
            db.modify(message)
        else:
            db.add(message)
    # The lab's password (tests/labfleet.py: "lab-password") is the test account's too, so
    # one CAS_AUDIT_PASSWORD serves the directory and the lab: no complexity rule, as a
    # domain whose policy allows it.
    db.set_pwdProperties("0")
    db.set_minPwdLength("0")
    db.newuser(sys.argv[2], password)


if __name__ == "__main__":
    main()
