//! control (under construction).
