"""The lab: a simulated Exchange organisation that speaks real WinRM on loopback."""
