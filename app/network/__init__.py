"""The box on the site network: what it has (discovery), whether it reaches the central host
(reachability, layer by layer), who else is there (neighbours, likely POS), and how it announces
itself (mDNS). `NetworkManager` keeps the latest of each for the status page.
"""
