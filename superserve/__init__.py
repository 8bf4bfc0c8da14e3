"""superserve: serving weight-shared SuperNets with SubNetAct and SlackFit."""
__version__ = "0.1.0"
