"""Test-time verifiers: a judge picks among a policy's candidates (thinkdraw.verifiers.verify)."""
