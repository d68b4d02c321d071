"""A Flower app whose ClientApp is the DP-LoRA enterprise client and whose training rounds are
aggregated with secagg's masking protocol (see ../README.md)."""
