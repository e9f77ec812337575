"""What a reconstruction is turned into: mesh files, parameter files, pictures and videos."""
