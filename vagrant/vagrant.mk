# The leak reproduced in a Vagrant VM (libvirt; KVM, else plain QEMU emulation).
# Included from the top Makefile; every target needs root.
#   sudo make vagrant-demo      boot the VM, reproduce the leak in a container, show the alert and the tree
#   sudo make vagrant-test      the same in a fresh VM, asserted, then destroyed; prints timings
#   sudo make vagrant-destroy   remove the VM
#   sudo make vagrant-box       build the local Debian 12 box (vagrant-demo/-test do when it is missing)
#   sudo make vagrant-tools     install vagrant, vagrant-libvirt, libvirt, QEMU and the box build tools
# SPAWNWATCH_BOX=debian/bookworm64 uses the public box instead of the local one.

.PHONY: vagrant-tools vagrant-box vagrant-demo vagrant-test vagrant-destroy

vagrant-tools:
	@vagrant/host.sh install

# demo and test build spawnwatch's wheel with the project's venv (make setup).
vagrant-demo vagrant-test: setup

vagrant-box vagrant-demo vagrant-test vagrant-destroy: vagrant-tools
	@vagrant/vm.sh $(@:vagrant-%=%)
