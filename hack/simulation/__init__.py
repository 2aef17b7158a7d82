"""A month of real CA behaviour in a minute: the operator's real decision core, executor and
scheduler against an in-memory API, simulated CAs and a virtual clock (``make simulate``).

Why a simulation: the refresh rules only show what they are worth over weeks (responses that
live 7 days, CDNs that cache for hours, outages that last days), and at the scale of a cluster
(10,000 Secrets). The real control plane cannot run a month in a minute; an event loop whose
clock jumps to the next timer can. Nothing of the operator is replaced: the same
``Reconciler``, ``Scheduler`` and verification code run, and only the API server (``memory``),
the network (``cas``, answering as responders and caIssuers URLs do) and time (``vloop``) are
simulated. ``scenarios`` holds the month's stories, ``measures`` what is measured of them, and
``report`` writes bench/simulation.md.
"""
