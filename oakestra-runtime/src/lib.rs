//! Workload runtimes of the worker: the `Runtime` trait and its containerd, qemu-unikernel and
//! in-memory implementations (DESIGN.md §6). The implementations arrive with the runtime issue.
