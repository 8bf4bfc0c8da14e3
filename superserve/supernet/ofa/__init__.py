"""Once-for-All SuperNets (ResNet-50, MobileNetV3) as SubNetAct SuperNets, and the importer
of OFA's checkpoints. Import the submodules directly (``ofa.models``, ``ofa.importer``): this
package's own namespace stays empty so that the checkpoint loader can build these models
without an import cycle."""
