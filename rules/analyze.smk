"""Stage 5: analyses of the trained models. Every analysis writes tables; rules/figures.smk draws from them."""

# Each analysis keeps to its own block below.

# --- embed and latent space ---
# --- end embed and latent space ---

# --- generation and features ---
# --- end generation and features ---

# --- beta sweep ---
# --- end beta sweep ---

# --- coupling ---
# --- end coupling ---

# --- perturbation ---
# --- end perturbation ---
