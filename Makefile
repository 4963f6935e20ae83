# Build, install and package warren (docs/install.md).
#   make                        build warren (and the Slurm plugin when slurm/ exists)
#   make install PREFIX=/usr/local DESTDIR=    the files the packages ship, without a package
#   make deb | make rpm         packages in $(OUT) (packaging/deb.sh, packaging/rpm.sh)
# Reproducible: the same commit gives byte-identical files and packages, whatever the
# build directory (SOURCE_DATE_EPOCH from the commit, paths remapped, no dates in pages).

PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/warren
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
SLURM_DOCDIR ?= $(PREFIX)/share/doc/warren-slurm
# Where slurmd looks for plugins: scontrol's PluginDir, else the distribution's default.
SLURM_PLUGINDIR ?= $(shell sh packaging/slurm-plugindir.sh)
DESTDIR    ?=
OUT        ?= $(CURDIR)/dist

CARGO      ?= cargo
STRIP      ?= strip
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The plugin crate joins the workspace in its own branch: build it when it is here.
HAVE_SLURM := $(wildcard slurm/Cargo.toml)

export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)
export WARREN_COMMIT ?= $(shell git rev-parse -q --verify HEAD 2>/dev/null)
# No build path in the output: sources, registry and target dir get fixed names.
REMAP := --remap-path-prefix=$(CURDIR)=/usr/src/warren-$(VERSION) \
         --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo \
         --remap-path-prefix=$(TARGET_DIR)=/target
# Once: packaging/*.sh run make again with these already in the environment, and the
# same flags keep cargo's build cached between `make` and `make deb`.
ifeq ($(findstring --remap-path-prefix=$(CURDIR)=,$(RUSTFLAGS)),)
export RUSTFLAGS := $(strip $(RUSTFLAGS) $(REMAP))
export CFLAGS := $(strip $(CFLAGS) $(subst --remap-path-prefix,-ffile-prefix-map,$(REMAP)))
endif
export CARGO_TARGET_DIR := $(TARGET_DIR)

REL  := $(TARGET_DIR)/release
GEN  := $(TARGET_DIR)/generated
BIN  := $(REL)/warren
SO   := $(REL)/libwarren_spank.so

.PHONY: all build build-slurm generated install install-warren install-slurm deb rpm check-packages

all: build

build:
	$(CARGO) build --release --locked --bin warren
ifneq ($(HAVE_SLURM),)
	$(CARGO) build --release --locked -p warren-slurm
endif

# Man pages and completions come from the built binary's CLI definition.
generated: build
	rm -rf $(GEN) && mkdir -p $(GEN)/man $(GEN)/completions
	$(BIN) man-pages $(GEN)/man
	for p in $(GEN)/man/*.1; do gzip -9n "$$p"; done
	$(BIN) completion bash > $(GEN)/completions/warren
	$(BIN) completion zsh  > $(GEN)/completions/_warren
	$(BIN) completion fish > $(GEN)/completions/warren.fish

install: install-warren
ifneq ($(HAVE_SLURM),)
install: install-slurm
endif

install-warren: generated
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/warren
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/warren
	$(STRIP) --remove-section=.comment --remove-section=.note $(DESTDIR)$(BINDIR)/warren
	install -m 0644 $(GEN)/man/*.1.gz $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(GEN)/completions/warren $(DESTDIR)$(BASHCOMPDIR)/warren
	install -m 0644 $(GEN)/completions/_warren $(DESTDIR)$(ZSHCOMPDIR)/_warren
	install -m 0644 $(GEN)/completions/warren.fish $(DESTDIR)$(FISHCOMPDIR)/warren.fish
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	# An admin's edited configuration is never overwritten: the new example goes beside it.
	if [ -e $(DESTDIR)$(SYSCONFDIR)/warren/warren.toml ]; then \
	  install -m 0644 config/warren.toml $(DESTDIR)$(SYSCONFDIR)/warren/warren.toml.example; \
	  echo "make: kept $(DESTDIR)$(SYSCONFDIR)/warren/warren.toml; the example is warren.toml.example"; \
	else install -m 0644 config/warren.toml $(DESTDIR)$(SYSCONFDIR)/warren/warren.toml; fi

# The plugin and its examples only: activating it (plugstack.conf.d) is the admin's step,
# because a `required` line naming a missing .so stops slurmd (docs/install.md).
install-slurm: build
	@[ -n "$(HAVE_SLURM)" ] || { echo "make: no slurm/Cargo.toml in this tree: the Slurm plugin is not part of this version" >&2; exit 1; }
	@[ -n "$(SLURM_PLUGINDIR)" ] || { echo "make: Slurm's plugin directory not found: set SLURM_PLUGINDIR" >&2; exit 1; }
	install -d $(DESTDIR)$(SLURM_PLUGINDIR) $(DESTDIR)$(SLURM_DOCDIR)/examples
	install -m 0644 $(SO) $(DESTDIR)$(SLURM_PLUGINDIR)/libwarren_spank.so
	$(STRIP) --strip-unneeded --remove-section=.comment --remove-section=.note \
	  $(DESTDIR)$(SLURM_PLUGINDIR)/libwarren_spank.so
	sed 's|@PLUGINDIR@|$(SLURM_PLUGINDIR)|g; s|@BINDIR@|$(BINDIR)|g' packaging/slurm/warren.conf.in \
	  > $(DESTDIR)$(SLURM_DOCDIR)/examples/warren.conf
	chmod 0644 $(DESTDIR)$(SLURM_DOCDIR)/examples/warren.conf
	# The plugin's own commented examples, when its tree ships them.
	for f in slurm/plugstack.conf slurm/oci.conf; do \
	  if [ -f $$f ]; then install -m 0644 $$f $(DESTDIR)$(SLURM_DOCDIR)/examples/; fi; done

deb:
	OUT=$(OUT) MAKE="$(MAKE)" bash packaging/deb.sh

rpm:
	OUT=$(OUT) MAKE="$(MAKE)" bash packaging/rpm.sh
