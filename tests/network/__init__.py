"""Network tests: discovery, reachability, neighbours, mDNS (namespace helpers in netns.py)."""
