"""Incident response: playbook planning (pure, :mod:`.plan`) and webhook signing (:mod:`.webhooks`)."""
