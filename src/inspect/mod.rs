//! inspect (under construction).
