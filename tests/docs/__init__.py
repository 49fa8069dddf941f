"""Documentation-site checks (run by .ci/docs.sh, not by the main test run)."""
