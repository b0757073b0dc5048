pub mod luks2_rewrite;
