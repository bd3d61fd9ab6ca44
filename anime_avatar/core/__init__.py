"""What every part of the library shares: params, errors, devices, files, process pools, the stage frame."""
