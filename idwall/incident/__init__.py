"""Incident response: playbook planning (:mod:`.plan`), who holds what (:mod:`.inventory`, :mod:`.readiness`),
webhook messages (:mod:`.webhooks`) and their delivery (:mod:`.delivery`), what a run did (:mod:`.report`) and
who is back since (:mod:`.recovery`); all pure but delivery and the run itself (:mod:`.run`)."""
