"""Reports: tables, figures and markdown/html rendering from records only."""
