"""Virtual card readers: serial readers on real pseudo-terminals (`virtual`) and the
`connectbox reader-sim` command that swipes on one (`cli`)."""
