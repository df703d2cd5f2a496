"""Incident response: playbook planning (:mod:`.plan`), who holds what (:mod:`.inventory`, :mod:`.readiness`),
webhook messages (:mod:`.webhooks`) and their delivery (:mod:`.delivery`); all pure but delivery."""
