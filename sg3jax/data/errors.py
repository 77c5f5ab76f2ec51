"""The one exception type of the data package: bad input named with its file and its problem."""


class DatasetError(ValueError):
    """A dataset (or an input to the dataset tool) that cannot be used, with a message that names the file and says
    what is wrong. The dataset tool prints it as `error: <message>` and exits with status 2."""
