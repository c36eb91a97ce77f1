//! Kernel module dependency closure from `modules.dep`, shared by the initrd
//! builder (which copies the closure) and the init (which loads it in order).
//!
//! A line reads `kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko ...`.
//! Module names compare as the kernel does: file stem without `.ko[.xz|.zst|.gz]`,
//! with `-` and `_` equivalent.

use alloc::string::String;
use alloc::vec::Vec;

use crate::Error;

/// One parsed line of modules.dep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry<'a> {
    /// Path relative to `/lib/modules/<release>/`.
    pub path: &'a str,
    pub deps: Vec<&'a str>,
}

/// A parsed `modules.dep`, borrowing from its text.
#[derive(Debug, Default)]
pub struct ModulesDep<'a> {
    entries: Vec<ModuleEntry<'a>>,
}

impl<'a> ModulesDep<'a> {
    pub fn parse(text: &'a str) -> Result<Self, Error> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((path, deps)) = line.split_once(':') else {
                return Err(Error::ModulesDepSyntax { line: index + 1 });
            };
            let path = path.trim();
            if path.is_empty() {
                return Err(Error::ModulesDepSyntax { line: index + 1 });
            }
            entries.push(ModuleEntry {
                path,
                deps: deps.split_whitespace().collect(),
            });
        }
        Ok(ModulesDep { entries })
    }

    pub fn entries(&self) -> &[ModuleEntry<'a>] {
        &self.entries
    }

    /// The entry for a module name (`virtio_net`, `virtio-net`) or path.
    pub fn find(&self, name: &str) -> Option<&ModuleEntry<'a>> {
        self.entries
            .iter()
            .find(|e| e.path == name || same_module_name(module_name(e.path), name))
    }

    /// The load order for `names`: every module after all of its
    /// dependencies, each once. Unknown names are an error naming the module.
    pub fn closure<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<&'a str>, Error> {
        let mut order: Vec<&'a str> = Vec::new();
        for name in names {
            let name = name.as_ref();
            let entry = self
                .find(name)
                .ok_or_else(|| Error::UnknownModule(String::from(name)))?;
            self.visit(entry, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        entry: &ModuleEntry<'a>,
        order: &mut Vec<&'a str>,
        depth: usize,
    ) -> Result<(), Error> {
        // modules.dep is acyclic by construction; the bound only stops a
        // corrupt file from recursing forever.
        if depth > 64 {
            return Err(Error::ModuleDependencyCycle(String::from(entry.path)));
        }
        if order.contains(&entry.path) {
            return Ok(());
        }
        for dep in &entry.deps {
            let dep_entry = self
                .entries
                .iter()
                .find(|e| e.path == *dep)
                .ok_or_else(|| Error::UnknownModule(String::from(*dep)))?;
            self.visit(dep_entry, order, depth + 1)?;
        }
        if !order.contains(&entry.path) {
            order.push(entry.path);
        }
        Ok(())
    }
}

/// The module name of a path: `kernel/fs/fat/vfat.ko.xz` → `vfat`.
pub fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    // Bytes and `get`, not `find(&str)` and `[..]`: str slicing's panic
    // path drags char formatting and Unicode tables into /init.
    let end = file.as_bytes().windows(3).position(|w| w == b".ko");
    end.and_then(|i| file.get(..i)).unwrap_or(file)
}

/// Whether two module names are the same to the kernel (`-` equals `_`).
pub fn same_module_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let norm = |c: u8| if c == b'-' { b'_' } else { c };
            norm(x) == norm(y)
        })
}

/// Whether `name` is listed in a `modules.builtin` text (paths, one per line).
pub fn is_builtin(modules_builtin: &str, name: &str) -> bool {
    modules_builtin
        .lines()
        .any(|l| same_module_name(module_name(l.trim()), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from Debian's 6.1.0 amd64 kernel (depmod output).
    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/fat/fat.ko:
";

    #[test]
    fn closure_puts_dependencies_first_once() {
        let dep = ModulesDep::parse(DEP).unwrap();
        let order = dep.closure(&["virtio_pci", "virtio-net"]).unwrap();
        let names: Vec<&str> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
    }

    #[test]
    fn every_module_follows_its_dependencies() {
        let dep = ModulesDep::parse(DEP).unwrap();
        let order = dep.closure(&["virtio_net", "vfat", "virtio_pci"]).unwrap();
        for (i, path) in order.iter().enumerate() {
            for d in &dep.find(path).unwrap().deps {
                let j = order.iter().position(|p| p == d).unwrap();
                assert!(j < i, "{d} must load before {path}");
            }
        }
    }

    #[test]
    fn unknown_module_is_named() {
        let dep = ModulesDep::parse(DEP).unwrap();
        assert_eq!(
            dep.closure(&["nosuch"]),
            Err(Error::UnknownModule("nosuch".into()))
        );
    }

    #[test]
    fn dangling_dependency_is_an_error() {
        let dep = ModulesDep::parse("a.ko: b.ko\n").unwrap();
        assert_eq!(
            dep.closure(&["a"]),
            Err(Error::UnknownModule("b.ko".into()))
        );
    }

    #[test]
    fn malformed_line_reports_its_number() {
        assert_eq!(
            ModulesDep::parse("a.ko:\nbroken line\n").unwrap_err(),
            Error::ModulesDepSyntax { line: 2 }
        );
    }

    #[test]
    fn cycles_are_bounded() {
        let dep = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(
            dep.closure(&["a"]),
            Err(Error::ModuleDependencyCycle(_))
        ));
    }

    #[test]
    fn builtin_lookup_normalises_names() {
        let builtin = "kernel/drivers/char/tpm/tpm_tis.ko\nkernel/drivers/char/tpm/tpm_crb.ko\n";
        assert!(is_builtin(builtin, "tpm-tis"));
        assert!(!is_builtin(builtin, "tpm"));
    }
}
