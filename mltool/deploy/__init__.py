"""Deploy models to devices over SSH: atomic releases, probes, rollback, fleets."""
