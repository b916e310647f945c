"""`python -m drivers.decoding` = `connectbox card decode`."""

from .cli import main

raise SystemExit(main())
