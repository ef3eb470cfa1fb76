// Anchor translation unit: carries the precompiled header that every project binary reuses.
