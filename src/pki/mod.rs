//! pki (under construction).
