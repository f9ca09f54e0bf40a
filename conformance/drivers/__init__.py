"""Ways to start the implementations the kit is run against.

* :mod:`.reference_master` — the reference master's scenario mode
  (``skyllh-cluster master --scenario conformance``);
* :mod:`.original_master` — the original ``MasterNode`` of skyllh==24.1.0
  driven through the conformance scenario;
* :mod:`.compute_nodes` — ``--cn-command`` templates for the reference and
  the original compute node.
"""
