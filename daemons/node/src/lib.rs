//! `oakestra-node`: the worker, NodeEngine and NetManager in one process. See DESIGN.md §4.4,
//! §4.6 and §6. It arrives with its issue.
