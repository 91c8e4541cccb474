from scanner.util import gcpolicy

gcpolicy.start_up()  # before the command line's imports (util/gcpolicy.py)

from scanner.cli import main  # noqa: E402

main()
