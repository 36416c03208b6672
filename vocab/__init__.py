"""What probe records say, in words and numbers, for every layer: flows as text, stack frames'
function names, log2 histograms, network namespaces.  No BCC, no UI, no other netsleuth package
(tests/test_layering.py checks it), so probes/, playbooks/, wizard/ and exporter/ can all use it."""
