"""The netsleuth wizard: a Textual app composing probes and playbooks."""
