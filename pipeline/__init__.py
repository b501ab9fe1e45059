"""newsdrift: multi-source news monitoring with figure drift."""
