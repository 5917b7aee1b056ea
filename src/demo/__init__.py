"""A small end-to-end demo on easy-VQA: raw images -> region features -> LXMERT fine-tuning -> plots."""
