"""Training the AMPere tower: the loop, cross-domain InfoNCE, alignment terms, CosFace, and the text-source ablation."""
