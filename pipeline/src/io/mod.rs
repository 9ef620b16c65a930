//! Frame devices. The only module of the workspace that may use `unsafe`:
//! raw sockets, mmap'ed rings and ioctls live here, each block with a
//! `// Safety:` comment.
#![allow(unsafe_code)]
