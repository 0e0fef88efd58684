// Compiled only to build the precompiled header that programs using focusvla share.
