"""A named segment: names, the segment, its header and attach table, and
the inventory of a namespace."""
