"""Incident response: playbook planning (pure, :mod:`.plan`), webhook messages (:mod:`.webhooks`) and their delivery (:mod:`.delivery`)."""
