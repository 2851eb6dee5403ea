"""Where selected components fire: a post-selection pass over only the selected components (``sparcom examples``)."""
