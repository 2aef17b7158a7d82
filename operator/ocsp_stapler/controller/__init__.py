"""The operator: kopf handlers over Secrets, and the machinery that keeps their staples fresh.

Read in this order: ``handlers`` (what kopf calls), ``reconciler`` (what happens for one
Secret), ``scheduling`` (when), ``secretpatches`` and ``statuses`` (what is written), ``running``
(how it all starts).
"""
