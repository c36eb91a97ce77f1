//! Loads the initrd's kernel modules, dependencies first, with finit_module.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ember_fs::modules_dep::{is_builtin, module_name, ModulesDep};
use rustix::fs::{open, Mode, OFlags};
use rustix::io::Errno;

use crate::fsutil;
use crate::Error;

/// The module names the initrd builder wrote, one per line.
pub const MODULE_LIST: &str = "/etc/ember/modules";

#[derive(Debug, Default)]
pub struct Report {
    pub loaded: Vec<String>,
    pub already_loaded: Vec<String>,
    pub builtin: Vec<String>,
    /// Named but not in modules.dep or not in the initrd: warnings.
    pub missing: Vec<String>,
    /// Present but the kernel refused them: warnings with the errno.
    pub failed: Vec<(String, Errno)>,
}

impl Report {
    /// The boot log's line for the `modules` phase.
    pub fn log(&self) {
        crate::info!(
            "modules: loaded [{}]; already loaded [{}]; built in [{}]; missing [{}]; refused [{}]",
            self.loaded.join(" "),
            self.already_loaded.join(" "),
            self.builtin.join(" "),
            self.missing.join(" "),
            self.failed.len()
        );
    }
}

/// Loads the modules listed in the initrd plus `extra`, each after its
/// dependencies. A missing or refused module is reported, not fatal: the
/// phase that needs it (network, ESP) will say what is missing.
pub fn load(extra: &[String]) -> Result<Report, Error> {
    let mut names: Vec<String> = match fsutil::read_text(MODULE_LIST) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    };
    names.extend(extra.iter().cloned());
    load_names(&names)
}

/// Loads `names` (carried in the initrd, e.g. as `NAME?` on-demand
/// modules), each after its dependencies.
pub fn load_names(names: &[String]) -> Result<Report, Error> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let base = format!("/lib/modules/{release}");
    let mut report = Report::default();
    if names.is_empty() {
        return Ok(report);
    }
    let dep_text = fsutil::read_text(&format!("{base}/modules.dep")).unwrap_or_default();
    let builtin = fsutil::read_text(&format!("{base}/modules.builtin")).unwrap_or_default();
    let deps = ModulesDep::parse(&dep_text)?;

    let mut done: Vec<&str> = Vec::new();
    for name in names {
        if is_builtin(&builtin, name) {
            report.builtin.push(name.clone());
            continue;
        }
        let order = match deps.closure(&[name.as_str()]) {
            Ok(order) => order,
            Err(e) => {
                crate::warn!("module {name}: {e} (initrd built for kernel {release}?)");
                report.missing.push(name.clone());
                continue;
            }
        };
        for path in order {
            if done.contains(&path) {
                continue;
            }
            done.push(path);
            let short = String::from(module_name(path));
            match insert(&format!("{base}/{path}")) {
                Ok(()) => report.loaded.push(short),
                Err(Errno::EXIST) => report.already_loaded.push(short),
                Err(Errno::NOENT) => {
                    crate::warn!("module {short}: {base}/{path} is not in the initrd");
                    report.missing.push(short);
                }
                Err(errno) => {
                    crate::warn!("module {short}: the kernel refused it: {errno}");
                    report.failed.push((short, errno));
                }
            }
        }
    }
    Ok(report)
}

fn insert(path: &str) -> Result<(), Errno> {
    let fd = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::system::finit_module(&fd, c"", 0)
}
