"""Report: the report model built from the store and the judge, and its exporters."""
