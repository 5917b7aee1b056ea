"""Development tools of the project (not installed, not imported by the code under src/)."""
