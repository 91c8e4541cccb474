"""cas-audit: audit AllowCrossSiteSessions on Exchange 2007 Client Access Servers."""

__version__ = "0.1.0"
